"""A real JupyterHub (and nginx in front of it) for the hub tests; see ``hubprocess``.

``package.json`` here pins configurable-http-proxy, JupyterHub's default proxy:
``npm ci`` in this folder installs it (``.ci/run`` does).
"""
