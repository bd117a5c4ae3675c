"""``python -m inference.features > docs/features.md`` regenerates the feature catalog."""

from inference.features.catalog import feature_catalog_markdown

print(feature_catalog_markdown(), end="")
