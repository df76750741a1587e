"""The HTTP adapter: worker-runtime's typed commands as a REST API (Falcon on waitress).

``adapters.falcon_app:app`` is the WSGI app for ``waitress-serve``;
``worker-runtime serve`` (``adapters.cli``) runs the same app with flags.
Browsers must go through the Backend: the API refuses any request with an
``Origin`` header.
"""

# The package itself exports nothing: its modules are the API.
__all__: list[str] = []
