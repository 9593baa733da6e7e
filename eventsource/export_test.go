package eventsource

// LoadSQL is Load's query, for the plan test.
const LoadSQL = loadSQL
