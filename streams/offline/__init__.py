"""The offline tools: a log of events read from a file or a topic, never a table or a side
effect. `replay` (the core over a log, in one process or several), `whatif` (a draft of the
rules against the rules in force), `tune` (a draft learnt from sales' outcomes) and the
explanation of one lead, with what prints and renders them."""
