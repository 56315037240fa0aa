"""One module per source format; each turns files into `CanonicalTables` and nothing else.

- `scats`     VicRoads SCATS volume workbook (.xls/.xlsx/.csv export)
- `citypulse` the Aarhus CityPulse folder (+ event listings)
- `matrix`    wide time x node matrices (CSV or HDF5, METR-LA/PEMS-BAY style)
- `long`      the documented generic long format (observations + sites + detectors CSVs)

Loaders only read; the store writes (one transaction), so a bad file changes nothing.
"""

FORMATS = ("scats", "citypulse", "matrix", "long")
