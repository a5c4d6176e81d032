"""`leadflow worker`: the Faust app, its agents, tables, table recovery and metrics."""
