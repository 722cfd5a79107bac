"""The playground: run an agent from the browser and watch it live."""
