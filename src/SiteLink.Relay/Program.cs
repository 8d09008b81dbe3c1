using SiteLink.Relay.Hosting;

// The standalone relay. Configuration and exit codes: RelayProgram and docs/operations.md.
return await RelayProgram.RunAsync(args).ConfigureAwait(false);
