"""Review console sessions (SPEC §13): sign in with an API token, a server-side session.

Signing in authenticates the token once (:meth:`TokenService.authenticate`) and stores a
row: the sha256 of a random cookie secret, the token's id, a CSRF token and an expiry. The
cookie carries only the secret. On every request the session is looked up by the secret's
hash and the token is authenticated again as the API does (:meth:`TokenService.
authenticate_digest`), so a revoked token, a scope removed or its name bound to another
token's agent takes effect at once, and the principal the pages act as is always the
token's current one.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select

from ..db.models import ApiToken, UiSession
from ..errors import Forbidden, Unauthenticated, Unavailable
from ..services.context import ServiceContext
from ..services.tokens import ANONYMOUS, Principal, TokenService, hash_token, unidentified

#: How long a console session lasts from sign-in (the cookie's Max-Age too).
SESSION_LIFETIME = timedelta(hours=8)


@dataclass(frozen=True)
class ConsoleSession:
    """A live session: who it acts as and the CSRF token its forms must carry."""

    id: str
    principal: Principal
    csrf_token: str

    def csrf_ok(self, presented: str | None) -> bool:
        """Constant-time check of a form's CSRF token against the session's."""
        return bool(presented) and same_text(self.csrf_token, str(presented))


def same_text(expected: str, presented: str) -> bool:
    """Constant-time comparison of two strings of any characters (``hmac.compare_digest``
    takes ``str`` of ASCII only: a form's ``csrf=é`` raised TypeError, a 500)."""
    return hmac.compare_digest(
        expected.encode("utf-8", "surrogatepass"), presented.encode("utf-8", "surrogatepass")
    )


class SessionService:
    """sign_in · resolve · sign_out."""

    def __init__(self, ctx: ServiceContext, tokens: TokenService, auth_enabled: bool) -> None:
        self.ctx = ctx
        self.tokens = tokens
        self.auth_enabled = auth_enabled

    def sign_in(self, token: str | None) -> tuple[str, ConsoleSession]:
        """Open a session for an API token; returns ``(cookie secret, session)``.

        Refused (:class:`Unauthenticated`) for an unknown or revoked token, and
        (:class:`Forbidden`) for a token without the ``view`` scope: every page reads."""
        principal = self.tokens.authenticate(token) if self.auth_enabled else ANONYMOUS
        principal.require("view")
        token_id = None
        if self.auth_enabled and token:
            with self.ctx.db.transaction() as s:
                token_id = s.scalar(
                    select(ApiToken.id).where(ApiToken.token_hash == hash_token(token))
                )
        secret = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = self.ctx.clock()
        with self.ctx.db.transaction() as s:
            s.execute(delete(UiSession).where(UiSession.expires_at <= now))
            s.add(
                UiSession(
                    id=hash_token(secret),
                    token_id=token_id,
                    principal=principal.name,
                    csrf_token=csrf,
                    created_at=now,
                    expires_at=now + SESSION_LIFETIME,
                )
            )
        return secret, ConsoleSession(hash_token(secret), principal, csrf)

    def resolve(self, secret: str | None) -> ConsoleSession:
        """The live session of a cookie secret, with its token's current principal, or
        :class:`Unauthenticated` (no cookie, unknown, expired, token revoked)."""
        if not secret:
            raise Unauthenticated("sign in to the console")
        now = self.ctx.clock()
        try:
            with self.ctx.db.transaction() as s:
                row = s.get(UiSession, hash_token(secret))
                if row is None or row.expires_at <= now:
                    raise Unauthenticated("the console session has ended; sign in again")
                session = (row.id, row.csrf_token)
                if row.token_id is None:
                    if self.auth_enabled:
                        raise Unauthenticated("the console session has ended; sign in again")
                    return ConsoleSession(session[0], ANONYMOUS, session[1])
                token = s.get(ApiToken, row.token_id)
                digest = token.token_hash if token is not None else None
        except Unavailable as exc:  # any cookie reaches this read: no driver text to it
            raise unidentified(exc) from exc
        try:  # the API's checks, read afresh: revoked, or its agent id bound to another token
            if digest is None:
                raise Unauthenticated("the token was deleted")
            principal = self.tokens.authenticate_digest(digest)
        except Unauthenticated:
            self.sign_out_row(session[0])
            raise Unauthenticated("the token of this session was revoked; sign in again") from None
        except Forbidden as refused:  # the API refuses the token now: so does the console
            self.sign_out_row(session[0])
            raise Unauthenticated(
                f"this session's token can no longer act ({refused.message}); sign in with"
                " another token"
            ) from None
        return ConsoleSession(session[0], principal, session[1])

    def sign_out_row(self, session_id: str) -> None:
        with self.ctx.db.transaction() as s:
            s.execute(delete(UiSession).where(UiSession.id == session_id))

    def sign_out(self, secret: str | None) -> None:
        if not secret:
            return
        self.sign_out_row(hash_token(secret))
