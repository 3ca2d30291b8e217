"""The lifecycle report: one self-contained HTML page of what the registry recorded about a model.

Gathering (``gather``, ``timeline``, ``rollouts``, ``drift``) reads the registry store and returns typed records
(``records``); rendering (``plots``, ``page``) turns them into PNG images and HTML; ``publish`` ties the two
together and writes the file atomically. Nothing here talks to Prefect or the network.
"""
