"""AWS price and billing sources."""
