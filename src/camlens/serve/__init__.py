"""``camlens serve``: the explorer in the browser and a JSON explanation service.

An ASGI app (FastAPI on uvicorn, the ``serve`` extra) bound to 127.0.0.1 by default:

- ``app``: :func:`create_app`, the routes (``/api/...``, the page at ``/``, OpenAPI at ``/docs``);
- ``catalog``: the models it serves (the zoo and any model the command line loads);
- ``limits``: upload, pixel, queue, batch and time limits;
- ``uploads``: multipart bodies parsed in memory, images and recordings read from bytes;
- ``batching``: the bounded worker pool and the micro-batcher;
- ``images``, ``captions``, ``recordings``, ``audits``: the work of each endpoint;
- ``layers``: the layer listing of ``camlens layers`` as JSON;
- ``samples``: the sample pictures and recordings, generated in memory;
- ``static/``: the page (HTML, JS and CSS, served by the package: no CDN).

Nothing is written to disk and nothing is unpickled.
"""

from camlens.serve.app import create_app
from camlens.serve.catalog import ModelCatalog, ServedModel
from camlens.serve.limits import Limits

__all__ = ["Limits", "ModelCatalog", "ServedModel", "create_app"]
