"""Who may do what in a workspace: identities, roles and the one authorization table.

Every mutating action of the app and the CLI is named in ``ACTIONS`` with the least role that
may perform it; ``authorize`` is the single check. The identity (``Actor``) always comes from
the server side: the signed-in user of the web request (``CAPYUI_AUTH`` locally, the Hugging
Face OAuth profile on a Space) or the local user of the CLI, never from anything the browser
sends. The role comes from settings the owner controls (``Policy.from_env``):

* ``CAPYUI_OWNERS``: comma-separated user names with the owner role (configure endpoints and
  recipes, load data, run jobs, export, publish, manage Argilla). Default: on a Space, the
  Space's owner (``SPACE_AUTHOR_NAME``); locally, every ``CAPYUI_AUTH`` user.
* ``CAPYUI_REVIEWERS``: user names with the reviewer role (see the queue, review).
  ``CAPYUI_ANY_SIGNED_IN_REVIEWS=1`` makes every signed-in user a reviewer.
* ``CAPYUI_DEMO=1``: anonymous visitors may look (read-only views), never change anything.
* No ``CAPYUI_AUTH``, not on a Space and bound to a loopback address: the one local user is the
  owner (``bash scripts/run.sh`` as before). On a Space or a public address without sign-in
  everybody is anonymous.

This module is part of the engine: it never imports gradio or capyui.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum


class Role(IntEnum):
    ANONYMOUS = 0
    REVIEWER = 1
    OWNER = 2

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Actor:
    """Who is calling: a user name (None when not signed in) and the role the owner gave it."""

    name: str | None
    role: Role
    via: str = "web"  # web | oauth | local | cli


# action -> the least role that may perform it. "view" is the read-only look at the workspace
# (queues, jobs, previews, the recipe), granted to anonymous visitors only in demo mode.
ACTIONS: dict[str, Role] = {
    "whoami": Role.ANONYMOUS,
    "view": Role.REVIEWER,
    "review": Role.REVIEWER,
    "load_data": Role.OWNER,
    "configure_models": Role.OWNER,
    "test_connection": Role.OWNER,
    "edit_recipe": Role.OWNER,
    "run_jobs": Role.OWNER,
    "binarize_options": Role.OWNER,
    "export": Role.OWNER,
    "publish": Role.OWNER,
    "manage_argilla": Role.OWNER,
    "view_config": Role.OWNER,  # which env vars are set, Argilla URLs: owners only
}


class Forbidden(PermissionError):
    """The actor's role does not allow the action; the message is one line for the user."""


def allowed(actor: Actor, action: str, *, demo: bool = False) -> bool:
    need = ACTIONS[action]  # KeyError: an action nobody declared is a bug, never a pass
    if action == "view" and demo:
        return True
    return actor.role >= need


def authorize(actor: Actor, action: str, *, demo: bool = False) -> None:
    """Raise ``Forbidden`` unless ``actor`` may perform ``action``."""
    if allowed(actor, action, demo=demo):
        return
    need = ACTIONS[action]
    if actor.name is None:
        raise Forbidden(f"Sign in first: {action.replace('_', ' ')} needs the {need.label} role.")
    raise Forbidden(
        f"{actor.name} ({actor.role.label}) may not {action.replace('_', ' ')}: it needs the "
        f"{need.label} role (the owner sets roles with CAPYUI_OWNERS / CAPYUI_REVIEWERS)."
    )


def _names(raw: str | None) -> frozenset[str]:
    return frozenset(n.strip() for n in (raw or "").split(",") if n.strip())


def _flag(raw: str | None) -> bool:
    return (raw or "").strip().lower() in ("1", "true", "yes", "on")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def auth_users(raw: str | None) -> list[tuple[str, str]]:
    """``CAPYUI_AUTH="alice:pw1,bob:pw2"`` -> [(alice, pw1), (bob, pw2)]; ValueError if bad."""
    out = []
    for item in (raw or "").split(","):
        item = item.strip()
        if not item:
            continue
        user, sep, password = item.partition(":")
        if not sep or not user.strip() or not password:
            raise ValueError("CAPYUI_AUTH must be 'user:password' (comma-separated for several)")
        out.append((user.strip(), password))
    return out


@dataclass(frozen=True)
class Policy:
    owners: frozenset[str]
    reviewers: frozenset[str]
    any_signed_in_reviews: bool = False
    demo: bool = False
    local_owner: bool = False  # no sign-in, loopback, not a Space: the local user owns it

    @classmethod
    def from_env(cls, host: str = "127.0.0.1", env: Mapping[str, str] | None = None) -> Policy:
        env = os.environ if env is None else env
        on_space = bool(env.get("SPACE_ID"))
        auth = env.get("CAPYUI_AUTH", "").strip()
        owners = _names(env.get("CAPYUI_OWNERS"))
        if not owners:
            if on_space and env.get("SPACE_AUTHOR_NAME"):
                owners = frozenset({env["SPACE_AUTHOR_NAME"]})
            elif auth and not on_space:
                owners = frozenset(u for u, _ in auth_users(auth))
        return cls(
            owners=owners,
            reviewers=_names(env.get("CAPYUI_REVIEWERS")),
            any_signed_in_reviews=_flag(env.get("CAPYUI_ANY_SIGNED_IN_REVIEWS")),
            demo=_flag(env.get("CAPYUI_DEMO")),
            local_owner=not auth and not on_space and is_loopback(host),
        )

    def actor(self, username: str | None, via: str = "web") -> Actor:
        """The actor for a server-side identity (None: not signed in)."""
        if not username:
            if self.local_owner:
                return Actor("local", Role.OWNER, "local")
            return Actor(None, Role.ANONYMOUS, via)
        if username in self.owners:
            return Actor(username, Role.OWNER, via)
        if username in self.reviewers or self.any_signed_in_reviews:
            return Actor(username, Role.REVIEWER, via)
        return Actor(username, Role.ANONYMOUS, via)

    def authorize(self, actor: Actor, action: str) -> None:
        authorize(actor, action, demo=self.demo)

    def allowed(self, actor: Actor, action: str) -> bool:
        return allowed(actor, action, demo=self.demo)


# The CLI is run by whoever holds the shell (and so the workspace's files): its owner.
CLI_ACTOR = Actor(os.environ.get("USER") or "cli", Role.OWNER, "cli")
