"""Read models: schema, projectors with tracking, stores and queries."""
