"""liveport-northd: OVN_Northbound -> Liveport_Southbound."""
