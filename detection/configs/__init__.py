"""MMDetection configs of the SSD transfer, by name: ``detection/configs/<name>.py``.

MMEngine reads them with ``Config.fromfile``. They are imported here too (they only
assign dicts), so that code naming a config depends on its file visibly: DVC's deps of
the ``transfer_ssd`` stage are the modules it imports, these included.
"""

from __future__ import annotations

from pathlib import Path

from detection.configs import ssdlite_pcdarts_320_coco, ssdlite_pcdarts_tiny_digits

CONFIGS = {
    module.__name__.rsplit(".", 1)[-1]: Path(str(module.__file__))
    for module in (ssdlite_pcdarts_320_coco, ssdlite_pcdarts_tiny_digits)
}


def config_file(name: str) -> Path:
    """The config file called ``name``; unknown names fail with the known ones."""
    try:
        return CONFIGS[name]
    except KeyError:
        raise KeyError(f"unknown detection config {name!r}; known: {', '.join(CONFIGS)}") from None
