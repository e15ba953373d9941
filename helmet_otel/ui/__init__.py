"""``helmet-otel ui``: the web viewer over the local store.

``app`` serves it on ``transports.http_server`` (the server ``serve`` uses): ``gate`` checks
every request (Host, Origin, the access token), ``api`` answers the JSON routes from the store's
query layer in worker threads, ``assets`` serves the single page in ``static/`` (plain HTML,
CSS and JavaScript shipped in the wheel: no CDN, no build step). Read-only.
"""
