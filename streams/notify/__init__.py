"""`leadflow notify`: new MQLs and handoff events delivered to webhooks, at least once, in order
per lead and webhook (docs/handoff.md, "Alerts")."""
