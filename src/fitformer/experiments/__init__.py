"""Long experiments behind ``fitformer experiment ...``: resumable run by run through the
run cache (design.md §9), writing their tables and plots under ``docs/``."""
