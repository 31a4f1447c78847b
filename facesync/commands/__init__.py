"""One module per command: its click options, then a call into the library code that does the work.

Options shared by several commands are defined once in ``options.py`` so they read the same everywhere.
"""
