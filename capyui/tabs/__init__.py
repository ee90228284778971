"""One module per tab of the CapyUI app; each has ``build(ws, tab, ...)``."""
