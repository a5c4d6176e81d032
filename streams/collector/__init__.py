"""`leadflow collect`: the HTTP edge (Segment Tracking API and the signed CRM webhook)."""
