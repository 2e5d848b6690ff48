"""Getting model weights onto this machine: the hub's own cache or a zip unpacked once, fast failure when the
hub cannot be reached, and an error that tells a person (or the dock) where the file is to be had by hand."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import ModelError
from ..paths import user_cache_base
from .presets import Download, Preset

HUB_HOST = ("huggingface.co", 443)


PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the model hub answers at all (one quick connection, no download).

    Behind a proxy a direct connection proves nothing, so the hub is then assumed reachable.
    """
    if any(os.environ.get(v) for v in PROXY_VARIABLES):
        return True
    try:
        with socket.create_connection(HUB_HOST, timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def offline_when_unreachable() -> Iterator[None]:
    """Use only locally cached hub files when the hub cannot be reached.

    Without this, each download is retried with back-off for most of a minute before failing.
    """
    import huggingface_hub.constants as hub

    before = hub.HF_HUB_OFFLINE
    if not before and not hub_reachable():
        hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = before


def weights_root() -> Path:
    """Where downloaded weights that are not on the Hub are kept: $CLIP_SEARCH_WEIGHTS, else the user cache."""
    explicit = os.environ.get("CLIP_SEARCH_WEIGHTS")
    return Path(explicit) if explicit else user_cache_base() / "weights"


class WeightsUnavailable(ModelError):
    """A model's weights could not be downloaded (no internet, a proxy, the host down). Besides the message
    (written for the command line), ``details`` carries the facts a GUI words for itself: the model, the
    address to download by hand, the file name and the reason."""

    def __init__(self, message: str, model: str, url: str, file: str, reason: str) -> None:
        super().__init__(message)
        self.details = {"missing_weights": {"model": model, "url": url, "file": file, "reason": reason}}


def download_failure(exc: BaseException) -> str:
    """Why a download failed, in a few words."""
    if not hub_reachable():
        return "there is no connection to the internet, or a proxy blocks it"
    return f"the download failed: {str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__}"


def _by_hand(preset: Preset, download: Download) -> str:
    return (
        f"Download {download.url} on a machine with internet access"
        + (f", take {download.zip_member} out of the zip" if download.zip_member else "")
        + f", and choose that file as the weights of {preset.name} (--model {preset.name} --pretrained FILE)."
    )


def _fetch_zip_member(download: Download, folder: Path) -> Path:
    """``download.zip_member`` extracted into ``folder`` (once; a finished file is never half-written)."""
    target = folder / download.file_name
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as scratch:
        archive = Path(scratch) / "weights.zip"
        # the address is one of the presets' (https, or file:// in tests); fetch_weights checks the scheme
        with contextlib.closing(urllib.request.urlopen(download.url, timeout=60)) as response:  # nosec B310
            with open(archive, "wb") as out:
                shutil.copyfileobj(response, out, 1 << 22)
        with zipfile.ZipFile(archive) as zipped:
            names = [n for n in zipped.namelist() if n == download.zip_member or n.endswith("/" + download.zip_member)]
            if not names:
                raise ModelError(f"{download.url} holds no {download.zip_member}.")
            partial = Path(scratch) / download.file_name
            with zipped.open(names[0]) as member, open(partial, "wb") as out:
                shutil.copyfileobj(member, out, 1 << 22)
        os.replace(partial, target)
    return target


def fetch_weights(preset: Preset) -> str:
    """Local path of a preset's downloadable weights, downloading them the first time."""
    download = preset.download
    if download is None:
        raise ModelError(f"{preset.name} has no downloadable weights file.")
    if not download.url.startswith(("https://", "http://", "file://")):
        raise ModelError(f"{preset.name}: unsupported weights address {download.url}.")
    try:
        if download.hub_repo:
            from huggingface_hub import hf_hub_download

            with offline_when_unreachable():
                return str(hf_hub_download(download.hub_repo, download.hub_file, revision=download.revision))
        return str(_fetch_zip_member(download, weights_root() / preset.name))
    except ModelError:
        raise
    except Exception as exc:
        raise WeightsUnavailable(f"Cannot get the weights of {preset.name}: {exc}. {_by_hand(preset, download)}",
                                 preset.name, download.url, download.file_name, download_failure(exc)) from exc
