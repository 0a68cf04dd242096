"""The audience writer: ad-platform audiences from memberships, identifiers and consent."""
