"""One module per command: parse, preflight, load, call the library, render."""
