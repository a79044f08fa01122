"""Jupyter server settings for the browser test (never for real use: no token, no XSRF check).

Started by playwright.config.js as `python -m jupyterlab --config jupyter_server_test_config.py`.
"""

import os

from jupyterlab.galata import configure_jupyter_server

configure_jupyter_server(c)  # noqa: F821 (`c` is the config object Jupyter passes in)
c.ServerApp.ip = "127.0.0.1"  # noqa: F821  localhost only
c.ServerApp.port = int(os.environ.get("MINIGEMMA_LAB_PORT", "8899"))  # noqa: F821
c.ServerApp.allow_root = os.geteuid() == 0  # noqa: F821  CI containers run as root
c.LabApp.news_url = None  # noqa: F821  nothing fetched from the network
c.LabApp.check_for_updates_class = "jupyterlab.NeverCheckForUpdate"  # noqa: F821
