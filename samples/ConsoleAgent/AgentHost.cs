using System.Globalization;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using SiteLink.Standalone;

namespace SiteLink.ConsoleAgent;

/// <summary>
/// The standalone agent: a generic host whose only job is a SiteLink session, configured entirely from the outside.
/// Sources, later ones winning: appsettings.json next to the binary, the file given with --config, environment variables
/// (SiteLink__RelayUrl, SiteLink__AuthToken, ... and SITELINK_AUTHTOKEN), then the command line.
/// </summary>
internal static class AgentHost
{
    public const string Usage = """
        sitelink-agent: serve local TCP services through a SiteLink relay (outbound connection only).

        Usage:
          sitelink-agent --relay https://relay.example:443 --token <authtoken> --endpoint db=127.0.0.1:5432 [--endpoint web=localhost:8080 ...]

        Options:
          --relay URL          the relay's agent address                  (SiteLink:RelayUrl)
          --token TOKEN        the authtoken; better: SITELINK_AUTHTOKEN  (SiteLink:AuthToken)
          --pin SHA256         trust the relay by certificate fingerprint (SiteLink:PinnedCertificateSha256)
          --ca-file FILE       trust only these CAs (PEM) for the relay's certificate: a private CA, or the CA of
                               a TLS-inspecting proxy           (SiteLink:TrustedCertificateAuthorities)
          --proxy URL          reach the relay through this HTTP proxy, e.g. http://proxy.corp:3128 (SiteLink:Proxy:Address;
                               credentials: SiteLink__Proxy__UserName / SiteLink__Proxy__Password). Default: HTTPS_PROXY / NO_PROXY
          --no-proxy           ignore HTTPS_PROXY / ALL_PROXY and connect directly (SiteLink:Proxy:UseEnvironment=false)
          --endpoint NAME=HOST:PORT   an internal endpoint; repeat as needed (SiteLink:Endpoints)
          --pool               the --endpoint names join pools: several agents serve each, the relay balances
                               connections across them (SiteLink:Endpoints:N:Pooling)
          --config FILE        a JSON file with a "SiteLink" section (see appsettings.json)
          --insecure           allow http:// relay URLs (development on loopback only)
          --Section:Key VALUE  any other configuration key, e.g. --Logging:LogLevel:Default Debug
          --help               this text
          --version            the agent's version

        sitelink-agent diagnose [the same options] [--json]
                               check the way to the relay step by step (DNS, TCP, proxy, TLS, HTTP/2, authtoken,
                               heartbeat) and say what is wrong in plain words; --json for support (no secrets in
                               either). --endpoint is accepted and ignored. Exit code 0 when every step passed;
                               otherwise the code below for what failed (2-8).

        Exit codes (for service managers; docs/operations.md):
          0 stopped by a signal    2 configuration    3 authtoken rejected    4 relay certificate not trusted
          5 version refused by the relay (protocol, or an SDK older than its minimum: upgrade; do not restart unchanged)
          6 session or endpoint refused by the relay    7 the HTTP proxy refused the tunnel or the credentials
          8 (diagnose) the relay could not be reached    1 anything else
        """;

    /// <summary>The agent's own switches; anything else starting with -- must be a configuration key (Section:Key).</summary>
    private static readonly string[] Switches = ["--relay", "--token", "--pin", "--ca-file", "--proxy", "--no-proxy", "--endpoint", "--pool", "--config", "--insecure", "--help", "--version"];

    /// <summary>The generic host's own switches, passed on to it.</summary>
    private static readonly string[] HostSwitches = ["--environment", "--contentRoot", "--applicationName"];

    /// <summary>Builds the agent's host from the command line (and the files and environment it names).</summary>
    /// <exception cref="ArgumentException">The command line is malformed.</exception>
    public static HostApplicationBuilder CreateBuilder(string[] args)
    {
        var (settings, remaining) = ParseArguments(args);
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings
        {
            Args = remaining,
            ContentRootPath = AppContext.BaseDirectory,
        });

        if (settings.TryGetValue("config", out var configFile) && configFile is not null)
        {
            ConfigFile.AddJson(builder.Configuration, configFile, reloadOnChange: false, "the agent");
        }

        // Like other agents' *_AUTHTOKEN variables: the secret stays out of the command line and the process list.
        if (Environment.GetEnvironmentVariable("SITELINK_AUTHTOKEN") is { Length: > 0 } token)
        {
            builder.Configuration.AddInMemoryCollection([new("SiteLink:AuthToken", token)]);
        }

        settings.Remove("config");
        builder.Configuration.AddInMemoryCollection(settings);

        // A permanent fault (token, trust, version) stops the agent so its service manager sees it (Program maps it
        // to an exit code); waiting for ever would leave a process that looks healthy and serves nothing.
        builder.Services.AddSiteLink().StopHostOnFault();
        // Under systemd: notify readiness and log in the journal's format; as a Windows service: the SCM lifetime.
        // Both do nothing when the agent runs in a terminal.
        builder.Services.AddSystemd();
        builder.Services.AddWindowsService(o => o.ServiceName = "SiteLink Agent");
        // A standalone process: give memory back once a burst of connections is over (never done by the SDK itself).
        builder.Services.TryAddSingleton(TimeProvider.System);
        builder.Services.AddHostedService<Standalone.MemoryTrim>();
        builder.Logging.AddFilter("Grpc", LogLevel.Warning);
        builder.Logging.AddFilter("Microsoft.Hosting.Lifetime", LogLevel.Warning);
        return builder;
    }

    /// <summary>Turns the agent's switches into configuration keys; returns what is left for the host.</summary>
    internal static (Dictionary<string, string?> Settings, string[] Remaining) ParseArguments(string[] args)
    {
        var settings = new Dictionary<string, string?>(StringComparer.OrdinalIgnoreCase);
        var remaining = new List<string>();
        var endpoints = 0;
        var pool = false;
        for (var i = 0; i < args.Length; i++)
        {
            // Messages name the switch or the argument's position, never a value: a value may be the token.
            if (!args[i].StartsWith("--", StringComparison.Ordinal))
            {
                throw new ArgumentException($"Argument {(i + 1).ToString(CultureInfo.InvariantCulture)} is a value without an option before it (options start with --).");
            }

            var equals = args[i].IndexOf('=', StringComparison.Ordinal);
            var name = equals < 0 ? args[i] : args[i][..equals];
            var inline = equals < 0 ? null : args[i][(equals + 1)..];

            string Value()
            {
                if (inline is not null)
                {
                    return inline;
                }

                if (i + 1 >= args.Length || args[i + 1].StartsWith("--", StringComparison.Ordinal))
                {
                    throw new ArgumentException($"{name} needs a value.");
                }

                return args[++i];
            }

            switch (name)
            {
                case "--relay":
                    settings["SiteLink:RelayUrl"] = Value();
                    break;
                case "--token":
                    settings["SiteLink:AuthToken"] = Value();
                    break;
                case "--pin":
                    settings["SiteLink:PinnedCertificateSha256"] = Value();
                    break;
                case "--ca-file":
                    settings["SiteLink:TrustedCertificateAuthorities"] = Value();
                    break;
                case "--proxy":
                    settings["SiteLink:Proxy:Address"] = Value();
                    break;
                case "--no-proxy":
                    NoValue(name, inline);
                    settings["SiteLink:Proxy:UseEnvironment"] = "false";
                    break;
                case "--insecure":
                    NoValue(name, inline);
                    settings["SiteLink:AllowInsecureTransport"] = "true";
                    break;
                case "--pool":
                    NoValue(name, inline);
                    pool = true;
                    break;
                case "--config":
                    settings["config"] = Value();
                    break;
                case "--endpoint":
                    AddEndpoint(settings, Value(), endpoints++);
                    break;
                default:
                    // --Section:Key value (or =value) and the host's own switches go to the host's configuration; a
                    // mistyped switch (--relya, --endpiont=web=...) must not vanish into it unnoticed.
                    if (!name.Contains(':', StringComparison.Ordinal) && !HostSwitches.Contains(name, StringComparer.OrdinalIgnoreCase))
                    {
                        throw new ArgumentException($"Unknown option {name}.{OptionSuggestion.DidYouMean(name, Switches)}");
                    }

                    remaining.Add(name);
                    remaining.Add(Value());
                    break;
            }
        }

        for (var i = 0; pool && i < endpoints; i++)
        {
            settings[$"SiteLink:Endpoints:{EndpointIndex(i)}:Pooling"] = "true";
        }

        return (settings, [.. remaining]);
    }

    private static void NoValue(string name, string? inline)
    {
        if (inline is not null)
        {
            throw new ArgumentException($"{name} takes no value.");
        }
    }

    // Numbered from 100 so they add to the endpoints of the files instead of overwriting them by index.
    private static string EndpointIndex(int count) => (100 + count).ToString(CultureInfo.InvariantCulture);

    private static void AddEndpoint(Dictionary<string, string?> settings, string spec, int count)
    {
        var equals = spec.IndexOf('=', StringComparison.Ordinal);
        if (equals <= 0 || equals == spec.Length - 1)
        {
            throw new ArgumentException($"--endpoint '{spec}' must be NAME=HOST:PORT.");
        }

        if (!ForwardEndpointOptions.TryParseUpstream(spec[(equals + 1)..], out _))
        {
            throw new ArgumentException($"--endpoint '{spec}': '{spec[(equals + 1)..]}' is not HOST:PORT or tcp://HOST:PORT with a port from 1 to 65535 (an IPv6 address goes in brackets: [::1]:8080).");
        }

        var index = EndpointIndex(count);
        settings[$"SiteLink:Endpoints:{index}:Name"] = spec[..equals];
        settings[$"SiteLink:Endpoints:{index}:Upstream"] = spec[(equals + 1)..];
    }
}
