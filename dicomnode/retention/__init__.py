"""Retention: what expired (pure policy) and its edges (SQL, Orthanc)."""
