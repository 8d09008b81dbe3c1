using SiteLink.ConsoleAgent;

// The standalone agent (sitelink-agent). Options, configuration sources and exit codes: AgentHost, AgentProgram and
// docs/operations.md.
return await AgentProgram.RunAsync(args);
