"""Federated learning: a federation as a recipe (clients, rounds, aggregation), its in-process simulation,
and adapters to Flower. Threats of family `federated` act through malicious clients; aggregation defences
replace the server's rule."""
