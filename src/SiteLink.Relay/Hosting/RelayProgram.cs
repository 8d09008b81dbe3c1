using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.Security;

namespace SiteLink.Relay.Hosting;

/// <summary>
/// The standalone relay's start-up: configuration from the <c>appsettings.json</c> next to the binary, an optional
/// <c>--config</c> file (relative to the working directory), environment variables (<c>SITELINK_</c> prefix, e.g.
/// <c>SITELINK_Relay__AgentListen</c>) and the command line. The JSON files are watched: a change to
/// <c>Relay:Tokens</c> applies at once; other settings need a restart. Every way it can fail to start ends in one
/// message and a documented exit code (docs/operations.md), never a stack trace.
/// </summary>
internal static class RelayProgram
{
    /// <summary>Stopped by a signal (SIGTERM, Ctrl+C) after draining.</summary>
    public const int ExitStopped = 0;

    /// <summary>An unexpected error; the message and the stack trace are on standard error.</summary>
    public const int ExitUnexpected = 1;

    /// <summary>The configuration is missing, malformed or invalid (a file, a key, a certificate); fix it before restarting.</summary>
    public const int ExitConfiguration = 2;

    /// <summary>The relay could not listen (an address in use or not permitted); restarting may help once it is free.</summary>
    public const int ExitCannotListen = 3;

    /// <summary>
    /// Defaults that must not depend on where the relay is started from (the files next to the binary may be missing
    /// or replaced): the lowest-precedence source, so appsettings.json, --config, the environment and the command line
    /// all override them.
    /// </summary>
    private static readonly KeyValuePair<string, string?>[] BuiltInDefaults =
    [
        new("Logging:LogLevel:Default", "Information"),
        new("Logging:LogLevel:Microsoft.AspNetCore", "Warning"),
        new("Logging:LogLevel:Microsoft.Hosting.Lifetime", "Warning"),
        new("Logging:LogLevel:Grpc", "Warning"),
    ];

    /// <summary>
    /// <c>--hash-password</c>: reads a password from the first line of standard input and prints its salted hash for a
    /// basic-auth rule's <c>PasswordHash</c> (the password itself never goes into configuration, logs or the command line).
    /// </summary>
    private static async Task<int> HashPasswordAsync()
    {
        var password = await Console.In.ReadLineAsync().ConfigureAwait(false);
        if (string.IsNullOrEmpty(password))
        {
            await Console.Error.WriteLineAsync("--hash-password reads the password from the first line of standard input, e.g.: read -rs P && printf '%s\\n' \"$P\" | SiteLink.Relay --hash-password").ConfigureAwait(false);
            return ExitConfiguration;
        }

        await Console.Out.WriteLineAsync(Policy.PasswordHash.Create(password).ToString()).ConfigureAwait(false);
        return ExitStopped;
    }

    public static async Task<int> RunAsync(string[] args)
    {
        try
        {
            return await RunCoreAsync(args).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // The process's last word: anything unexpected is reported with its trace and a distinct code.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            await Console.Error.WriteLineAsync($"SiteLink relay failed unexpectedly: {ex}").ConfigureAwait(false);
            return ExitUnexpected;
        }
    }

    private static async Task<int> RunCoreAsync(string[] args)
    {
        if (args is ["--hash-password"])
        {
            return await HashPasswordAsync().ConfigureAwait(false);
        }

        WebApplicationBuilder builder;
        RelayOptions options;
        X509Certificate2? certificate;
        try
        {
            builder = CreateBuilder(args);
            options = RelayConfiguration.Load(builder.Configuration);
            // The standalone relay keeps the admin API's store in a file next to its binary unless told otherwise.
            if (options.Admin.Listen is not null && options.Store.Provider == "sqlite" && options.Store.Path is null)
            {
                options.Store.Path = Path.Combine(AppContext.BaseDirectory, "sitelink-relay.db");
            }
            certificate = RelayApplication.AddRelay(builder, options);
            // The standalone relay only (not RelayApplication, which embedding hosts use): give memory back once a
            // burst of connections is over.
            builder.Services.AddHostedService<Standalone.MemoryTrim>();
            RelayApplication.CheckAddressesAvailable(options);
        }
        catch (RelayConfigurationException ex)
        {
            await Console.Error.WriteLineAsync(ex.Message).ConfigureAwait(false);
            return ExitConfiguration;
        }
        catch (RelayStartException ex)
        {
            await Console.Error.WriteLineAsync($"SiteLink relay cannot start: {ex.Message}").ConfigureAwait(false);
            return ExitCannotListen;
        }

        var app = builder.Build();
        await using (app.ConfigureAwait(false))
        {
            RelayApplication.MapRelay(app);
            try
            {
                await app.StartAsync().ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is RelayStartException or IOException or AddressInUseException)
            {
                // One line naming what could not start and where. (Should the address be taken between the check above
                // and here, the host also logs its own error.)
                await Console.Error.WriteLineAsync($"SiteLink relay cannot start: {ex.Message}").ConfigureAwait(false);
                return ExitCannotListen;
            }

            Console.WriteLine($"Configuration files: {string.Join(", ", ConfigurationFiles(builder.Configuration))}");
            PrintAddresses(app, options.RelayId, certificate);
            await app.WaitForShutdownAsync().ConfigureAwait(false);
            return ExitStopped;
        }
    }

    /// <summary>
    /// The relay's application builder. Its content root is the binary's folder, so the shipped appsettings.json applies
    /// whatever the working directory (a service manager's is often <c>/</c>).
    /// </summary>
    internal static WebApplicationBuilder CreateBuilder(string[] args)
    {
        CheckSwitches(args);
        var configFile = ConfigFileArgument(args);
        WebApplicationBuilder builder;
        try
        {
            builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory });
        }
        catch (InvalidDataException ex)
        {
            // The message names the file (appsettings.json or appsettings.{Environment}.json next to the binary).
            throw new RelayConfigurationException([$"{ex.Message} {ex.GetBaseException().Message}"]);
        }

        builder.Configuration.Sources.Insert(0, new Microsoft.Extensions.Configuration.Memory.MemoryConfigurationSource { InitialData = BuiltInDefaults });
        if (configFile is not null)
        {
            RelayConfiguration.AddConfigFile(builder.Configuration, configFile);
        }

        builder.Configuration.AddEnvironmentVariables("SITELINK_");
        builder.Configuration.AddCommandLine(args);
        return builder;
    }

    /// <summary>
    /// Every switch must be <c>--config</c>, one of the host's own, or a configuration key (<c>--Relay:AgentListen</c>):
    /// a mistyped one (<c>--confg</c>) is refused by name instead of vanishing into the configuration. Values are never
    /// quoted (one may be a secret).
    /// </summary>
    private static void CheckSwitches(string[] args)
    {
        for (var i = 0; i < args.Length; i++)
        {
            var arg = args[i];
            if (!arg.StartsWith("--", StringComparison.Ordinal) && !arg.StartsWith('/'))
            {
                throw new RelayConfigurationException([$"Argument {(i + 1).ToString(System.Globalization.CultureInfo.InvariantCulture)} is a value without an option before it (options start with --)."]);
            }

            var name = arg.Split('=', 2)[0];
            if (!name.Contains(':', StringComparison.Ordinal) && !KnownSwitches.Contains(name, StringComparer.OrdinalIgnoreCase))
            {
                throw new RelayConfigurationException([$"Unknown option {name}.{Standalone.OptionSuggestion.DidYouMean(name, KnownSwitches)} Options: --config FILE, or any configuration key as --Relay:Key VALUE."]);
            }

            if (!arg.Contains('=', StringComparison.Ordinal))
            {
                i++;
            }
        }
    }

    private static readonly string[] KnownSwitches = ["--config", "--environment", "--contentRoot", "--applicationName", "--urls"];

    /// <summary>The value of <c>--config</c> (or <c>--config=</c>), read before the host so its file can be checked first.</summary>
    private static string? ConfigFileArgument(string[] args) =>
        new ConfigurationBuilder().AddCommandLine(args).Build()["config"] is { Length: > 0 } file ? file : null;

    /// <summary>The JSON files the configuration was read from, in order (later ones win), as absolute paths.</summary>
    private static IEnumerable<string> ConfigurationFiles(IConfigurationRoot configuration) =>
        configuration.Providers.Select(RelayConfiguration.FileOf).OfType<string>().Where(File.Exists);

    private static void PrintAddresses(WebApplication app, string relayId, X509Certificate2? certificate)
    {
        Console.WriteLine($"SiteLink relay '{relayId}' listening for agents on {RelayApplication.AgentUrl(app, certificate is not null)}");
        if (certificate is not null)
        {
            Console.WriteLine($"TLS certificate SHA-256 (pin it in agents): {RelayCertificate.Sha256Of(certificate)}");
        }

        if (app.Services.GetRequiredService<Admin.AdminApi>().Url is { } admin)
        {
            Console.WriteLine($"Admin API on {admin} (dashboard: {new Uri(admin, "dashboard")}, OpenAPI: {new Uri(admin, "openapi/v1.json")})");
            if (certificate is not null && admin.Scheme == Uri.UriSchemeHttps)
            {
                // curl's pin is the public key's hash, not the certificate's.
                var spki = Convert.ToBase64String(System.Security.Cryptography.SHA256.HashData(certificate.PublicKey.ExportSubjectPublicKeyInfo()));
                Console.WriteLine($"Admin API public key pin (curl --pinnedpubkey): sha256//{spki}");
            }
        }

        var endpoints = app.Services.GetRequiredService<RelayOptions>().CloudEndpoints.ToDictionary(e => e.Name, StringComparer.OrdinalIgnoreCase);
        foreach (var (name, address) in RelayApplication.CloudEndpoints(app))
        {
            // tcp endpoints: the port is the endpoint; http, https and tls: the shared listener and the names it routes here.
            var options = endpoints[name];
            var hosts = options.Hostnames.Count == 0 ? "" : $" for {string.Join(", ", options.Hostnames)}";
            Console.WriteLine($"Cloud endpoint '{name}' on {options.Protocol.ToLowerInvariant()}://{address}{hosts}");
        }
    }
}
