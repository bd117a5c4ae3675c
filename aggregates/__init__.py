"""The trading domain: instruments, aggregates, domain events, the application, sagas."""
