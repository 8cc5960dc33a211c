"""Label conventions shared by every part of LVT (files, database, UI).

A label map is exclusive: 0 background, 1 liver parenchyma, 2 intrahepatic vessel, 3 tumor.
The network's sigmoid channels are, in order, liver, vessel and tumor.
"""

from __future__ import annotations

BACKGROUND = 0
LIVER = 1
VESSEL = 2
TUMOR = 3

CLASS_NAMES: dict[int, str] = {LIVER: "liver", VESSEL: "vessel", TUMOR: "tumor"}
CHANNELS: tuple[str, ...] = ("liver", "vessel", "tumor")
