"""Charter over HTTP: `create_app(charter)` is the ASGI application, `serve` runs it.

```python
from charter import Charter
from charter.server import create_app

app = create_app(Charter("my-policy", "charter.db"))   # any ASGI server can run it
```

Routes, auth, error codes and semantics are documented in docs/api.md.
"""

from charter.server._app import create_app
from charter.server._auth import ROUTE_ROLES
from charter.server._errors import STATUS, ApiError
from charter.server._run import serve

__all__ = ["ROUTE_ROLES", "STATUS", "ApiError", "create_app", "serve"]
