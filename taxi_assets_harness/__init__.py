"""Running Dagster as users do, for the end-to-end tests and the benchmarks alike: `dagster dev`
and `make serve` (instances.py), a throwaway PostgreSQL server (postgres.py), the webserver's
GraphQL API as the UI uses it (graphql.py), free loopback ports (ports.py). Neither the code
location nor the tests: both import it, it imports neither."""
