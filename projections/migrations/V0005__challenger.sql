-- Stage changes of the challenger rules (LEADFLOW_WORKER__CHALLENGER_RULES), from their own
-- topic: the same contract, engine and key as stage_changes, kept apart from the live funnel.
CREATE TABLE IF NOT EXISTS {database}.challenger_stage_changes AS {database}.stage_changes;
