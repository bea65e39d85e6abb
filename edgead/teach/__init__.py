"""Teaching on the line: refit the served model from good frames (or fold false rejects back
into its memory bank), keep the last versions, roll back. No torch: the artifact's own backbone."""
