"""Price sources: the shelf and billing bases, the fetch layer, the custom and offline tables, and one package
per cloud. Cloud sources register themselves (`registry.py`) and import their SDK only when built."""
