"""llmcore's built-in plugins, one module per component kind.

They are declared under ``[project.entry-points.llmcore]`` in llmcore's ``pyproject.toml``
and load through the plugin manager exactly like third-party plugins.
"""
