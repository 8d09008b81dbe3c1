using System.Globalization;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

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
          --endpoint NAME=HOST:PORT   an internal endpoint; repeat as needed (SiteLink:Endpoints)
          --config FILE        a JSON file with a "SiteLink" section (see appsettings.json)
          --insecure           allow http:// relay URLs (development on loopback only)
          --help               this text
        """;

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
            builder.Configuration.AddJsonFile(Path.GetFullPath(configFile), optional: false, reloadOnChange: false);
        }

        // Like other agents' *_AUTHTOKEN variables: the secret stays out of the command line and the process list.
        if (Environment.GetEnvironmentVariable("SITELINK_AUTHTOKEN") is { Length: > 0 } token)
        {
            builder.Configuration.AddInMemoryCollection([new("SiteLink:AuthToken", token)]);
        }

        settings.Remove("config");
        builder.Configuration.AddInMemoryCollection(settings);

        builder.Services.AddSiteLink();
        // Under systemd: notify readiness and log in the journal's format; as a Windows service: the SCM lifetime.
        // Both do nothing when the agent runs in a terminal.
        builder.Services.AddSystemd();
        builder.Services.AddWindowsService(o => o.ServiceName = "SiteLink Agent");
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
        for (var i = 0; i < args.Length; i++)
        {
            string Value()
            {
                if (i + 1 >= args.Length || args[i + 1].StartsWith("--", StringComparison.Ordinal))
                {
                    throw new ArgumentException($"{args[i]} needs a value.");
                }

                return args[++i];
            }

            switch (args[i])
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
                case "--insecure":
                    settings["SiteLink:AllowInsecureTransport"] = "true";
                    break;
                case "--config":
                    settings["config"] = Value();
                    break;
                case "--endpoint":
                    var spec = Value();
                    var equals = spec.IndexOf('=', StringComparison.Ordinal);
                    if (equals <= 0 || equals == spec.Length - 1)
                    {
                        throw new ArgumentException($"--endpoint '{spec}' must be NAME=HOST:PORT.");
                    }

                    // Numbered from 100 so they add to the endpoints of the files instead of overwriting them by index.
                    var index = (100 + endpoints++).ToString(CultureInfo.InvariantCulture);
                    settings[$"SiteLink:Endpoints:{index}:Name"] = spec[..equals];
                    settings[$"SiteLink:Endpoints:{index}:Upstream"] = spec[(equals + 1)..];
                    break;
                default:
                    remaining.Add(args[i]);
                    break;
            }
        }

        return (settings, [.. remaining]);
    }
}
