"""`sslboost` commands of this area (registered on :data:`e2mc_cli.cli.app.app`)."""

from __future__ import annotations
