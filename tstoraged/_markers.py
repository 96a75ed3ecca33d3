"""The pluggy markers, defined once. Project name and entry-point group: ``tstoraged``."""

import pluggy

PROJECT_NAME = "tstoraged"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
