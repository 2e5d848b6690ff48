"""Shared real test servers and test-data makers for the engine and plugin tests.

Web imagery (XYZ tiles, WMS, remote Cloud-Optimised GeoTIFFs, sheet collections) is tested against real
HTTP servers that the tests start on 127.0.0.1 and stop themselves, never against mocks:

- ``http``: a tile server and an HTTP range file server with fault knobs (standard library only, so both
  the engine and the QGIS test environments can import it);
- ``wms``: a real WMS (MapServer's ``mapserv`` behind a small CGI gateway; standard library only);
- ``imagery``: makers of XYZ tiles, COGs and sheet collections from a raster (needs rasterio, so engine
  environment only; the QGIS side runs it as ``python -m tests.servers.imagery``).
"""
