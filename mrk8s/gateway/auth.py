"""Who is calling: bearer tokens and HTTP Basic passwords from the config, as a dependency.

Every route of ``/v1`` depends on :func:`current_user`. A request without
credentials, or with wrong ones, is answered 401 with a ``WWW-Authenticate``
header. The user's name is put on the request's state, where the audit
middleware (:mod:`mrk8s.gateway.audit`) finds it. With no users configured
and no ``$MRK8S_GATEWAY_TOKEN``, authentication is off and every caller is
the admin ``anonymous`` (the minimal contract of a local gateway; README
says so). Secrets are compared in constant time.

Next: a trusted user header set by an authenticating proxy (off by default).
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import (
    HTTPAuthorizationCredentials,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
)

from mrk8s.gateway.config import GatewayConfig, User

ANONYMOUS = User(name="anonymous", admin=True)

bearer_scheme = HTTPBearer(auto_error=False, description="a token from the gateway's config")
basic_scheme = HTTPBasic(auto_error=False, description="a user and password from the config")


def _same(a: str | None, b: str) -> bool:
    return a is not None and hmac.compare_digest(a.encode(), b.encode())


def authenticate(
    config: GatewayConfig,
    bearer: HTTPAuthorizationCredentials | None,
    basic: HTTPBasicCredentials | None,
) -> User | None:
    """The configured user these credentials belong to, or None."""
    if bearer is not None:
        for user in config.users:
            if _same(user.token, bearer.credentials):
                return user
    if basic is not None:
        for user in config.users:
            if hmac.compare_digest(user.name.encode(), basic.username.encode()) and _same(
                user.password, basic.password
            ):
                return user
    return None


def current_user(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    basic: Annotated[HTTPBasicCredentials | None, Depends(basic_scheme)],
) -> User:
    config: GatewayConfig = request.app.state.config
    if not config.auth_enabled:
        user: User | None = ANONYMOUS
    else:
        user = authenticate(config, bearer, basic)
    if user is None:
        given = "wrong credentials" if (bearer or basic) else "no credentials"
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            f"{given}: send 'Authorization: Bearer TOKEN' (or HTTP Basic) with a token or "
            "password from the gateway's config",
            headers={"WWW-Authenticate": 'Bearer realm="mrk8s", Basic realm="mrk8s"'},
        )
    request.state.user = user.name
    return user


CurrentUser = Annotated[User, Depends(current_user)]


def require_admin(user: CurrentUser) -> User:
    if not user.admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"{user.name} is not an admin")
    return user
