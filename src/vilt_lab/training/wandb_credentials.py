"""W&B online without credentials: offline instead, said once, before any work.

`conf/logger/wandb.yaml` asks for an online run unless WANDB_MODE says otherwise, so a first
`vilt-train` on a machine that never ran `wandb login` would build the model and the data stream
and only then fail in `wandb.init`. The check looks for credentials where `wandb.init` looks
(the session's, WANDB_API_KEY or WANDB_IDENTITY_TOKEN_FILE, the netrc entry for the W&B host,
W&B's settings file) without prompting, verifying or touching the network. Falling back to
offline keeps a first run going: its W&B files land in the run dir and `wandb sync` uploads
them once the machine has a key.
"""

from __future__ import annotations

import dataclasses
import logging

from ..config.errors import UserError, reports_to_the_user
from ..config.schema import LoggerSchema

log = logging.getLogger("vilt_lab.wandb")

# The modes that upload (W&B's "run" is "online"'s old name), hence need credentials.
UPLOADING_MODES = ("online", "run", "shared")


def offline_without_credentials(logger: LoggerSchema) -> LoggerSchema:
    """The typed `logger` node as given, or in offline mode when it would upload and W&B has no
    credentials. Settings or credentials W&B refuses (a malformed WANDB_API_KEY) are a `UserError`."""
    if logger.mode not in UPLOADING_MODES or _wandb_has_credentials(logger.mode):
        return logger
    if reports_to_the_user():
        log.warning(
            "W&B has no credentials: logging offline instead of logger.mode=%s; run `wandb login` "
            "or set WANDB_API_KEY=... to upload, or logger.mode=offline|disabled to silence this",
            logger.mode,
        )
    return dataclasses.replace(logger, mode="offline")


def _wandb_has_credentials(mode: str) -> bool:
    """Whether `wandb.init` would find credentials, asked as it asks them (read only: no prompt,
    no session change, no request). What `wandb.init` would refuse (a WANDB_* variable W&B's
    settings reject, a malformed key) is refused here, before any work."""
    from wandb.errors import AuthenticationError
    from wandb.sdk import wandb_setup
    from wandb.sdk.lib import wbauth

    try:
        host = wandb_setup.singleton().settings.base_url  # pydantic's ValidationError: a ValueError
        auth = wbauth.authenticate_session(host=host, source="vilt-train", prompt=False, update_session=False)
    except (AuthenticationError, ValueError) as err:
        raise UserError(
            f"logger.mode={mode}: W&B refuses its settings or credentials: {err}\nfix them "
            "(`wandb login`, the WANDB_* variables), or set logger.mode=offline|disabled"
        ) from None
    return auth is not None
