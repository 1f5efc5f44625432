"""Loading user files: models and data. Everything that can go wrong is a UserError."""
