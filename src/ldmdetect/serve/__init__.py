"""HTTP service for a detector: a JSON API, a web page, and limits that hold under abuse.

Needs the ``serve`` extra (``pip install "ldmdetect[serve]"``).
"""

from ldmdetect.serve.app import create_app
from ldmdetect.serve.server import run_server, serve_in_thread

__all__ = ["create_app", "run_server", "serve_in_thread"]
