"""Authentication of users by their Supabase JWT (HS256, audience "authenticated").

Every failure gets the same 401 answer with a ``WWW-Authenticate`` header; why
the token was refused goes to the log only, so a caller learns nothing about
the secret or the checks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import jwt
from fastapi import HTTPException, status

logger = logging.getLogger(__name__)

AUDIENCE = "authenticated"
ROLE = "authenticated"
ALGORITHM = "HS256"
UNAUTHORIZED_DETAIL = "A valid bearer token is required."


@dataclass(frozen=True)
class User:
    """The caller, as its token names it."""

    user_id: str


def unauthorized(*, token_given: bool) -> HTTPException:
    """Return the one 401 the gateway answers for every authentication failure."""
    challenge = 'Bearer error="invalid_token"' if token_given else "Bearer"
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=UNAUTHORIZED_DETAIL,
        headers={"WWW-Authenticate": challenge},
    )


def bearer_token(authorization: str | None) -> str | None:
    """Return the token of an ``Authorization: Bearer`` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class TokenVerifier:
    """Verifies user tokens with the shared HS256 secret."""

    def __init__(self, secret: str) -> None:
        self._secret = secret

    def user_for(self, authorization: str | None) -> User:
        """Return the user an ``Authorization`` header proves, or raise a 401."""
        token = bearer_token(authorization)
        if token is None:
            logger.info("refused a request without a bearer token")
            raise unauthorized(token_given=authorization is not None)
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                options={"require": ["exp", "sub", "aud"]},
            )
        except jwt.PyJWTError as error:
            logger.info("refused a token: %s", type(error).__name__)
            raise unauthorized(token_given=True) from None
        return self._user_from(claims)

    @staticmethod
    def _user_from(claims: dict[str, object]) -> User:
        subject, role = claims.get("sub"), claims.get("role")
        if not isinstance(subject, str) or not subject:
            logger.info("refused a token whose subject is not a user id")
            raise unauthorized(token_given=True)
        if role != ROLE:
            logger.info("refused a token with role %r", role)
            raise unauthorized(token_given=True)
        return User(user_id=subject)
