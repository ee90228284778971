"""Hugging Face Space / local entry point: build the CapyUI app and serve it.

    python app.py            # http://127.0.0.1:7860 (0.0.0.0 on a Space)

Settings come from the environment: CAPYUI_DATA_DIR (workspace folder; /data/capyui on a
Space with persistent storage), CAPYUI_AUTH=user:password[,user2:password2] (login when not on
a Space), CAPYUI_OWNERS / CAPYUI_REVIEWERS / CAPYUI_ANY_SIGNED_IN_REVIEWS / CAPYUI_DEMO (roles,
see README "Deploying as a Space"), CAPYUI_ENDPOINTS (the owner's endpoint registry),
GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (address to bind). Without a login, on 127.0.0.1 and
not on a Space, the local user is the owner.
"""

from __future__ import annotations

import os

from capyui.app import launch

if __name__ == "__main__":
    on_space = bool(os.environ.get("SPACE_ID"))
    launch(
        host=os.environ.get("GRADIO_SERVER_NAME") or ("0.0.0.0" if on_space else "127.0.0.1"),
        port=int(os.environ.get("GRADIO_SERVER_PORT") or 7860),
        data_dir=os.environ.get("CAPYUI_DATA_DIR") or None,
    )
