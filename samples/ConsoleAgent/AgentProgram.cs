using System.Reflection;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace SiteLink.ConsoleAgent;

/// <summary>
/// Runs the standalone agent and turns every way it can end into one message and a documented exit code
/// (docs/operations.md), so a service manager (systemd, Windows SCM, a container runtime) can tell a configuration
/// mistake from a rejected token from an untrusted relay, and nobody reads a stack trace to find out.
/// </summary>
internal static partial class AgentProgram
{
    public const int ExitStopped = 0;
    public const int ExitUnexpected = 1;
    public const int ExitConfiguration = 2;
    public const int ExitAuthentication = 3;
    public const int ExitTrust = 4;
    /// <summary>The relay refuses this agent's version (its protocol, or an SDK older than the relay's minimum): only an upgrade helps, so a service manager should not restart it unchanged.</summary>
    public const int ExitVersion = 5;
    public const int ExitRefused = 6;
    /// <summary>The HTTP proxy on the way to the relay refused the tunnel or the agent's credentials.</summary>
    public const int ExitProxy = 7;
    /// <summary><c>diagnose</c> only: the relay could not be reached (name, TCP, timeout, HTTP/2).</summary>
    public const int ExitUnreachable = 8;

    /// <summary>Runs the agent until it is stopped or fails; returns the process's exit code.</summary>
    /// <param name="args">The command line.</param>
    /// <param name="configure">For tests: changes to the host (e.g. its logging) before it is built.</param>
    public static async Task<int> RunAsync(string[] args, Action<HostApplicationBuilder>? configure = null)
    {
        if (args.Contains("--help") || args.Contains("-h"))
        {
            Console.WriteLine(AgentHost.Usage);
            return ExitStopped;
        }

        if (args.Contains("--version"))
        {
            Console.WriteLine($"sitelink-agent {typeof(TunnelSession).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion}");
            return ExitStopped;
        }

        // "diagnose" takes the agent's own options, so it checks exactly the configuration the agent would run with.
        var diagnose = args.Length > 0 && args[0] == "diagnose";
        var json = diagnose && args.Contains("--json");
        if (diagnose)
        {
            args = [.. args.Skip(1).Where(a => a != "--json")];
        }

        IHost host;
        try
        {
            host = Build(args, configure);
        }
        catch (Exception ex) when (ex is ArgumentException or Standalone.ConfigFileException)
        {
            await Console.Error.WriteLineAsync($"sitelink-agent: {ex.Message}{Environment.NewLine}Run 'sitelink-agent --help' for the options.");
            return ExitConfiguration;
        }
        catch (OptionsValidationException ex)
        {
            await Console.Error.WriteLineAsync("sitelink-agent: invalid configuration:" + Environment.NewLine +
                string.Join(Environment.NewLine, ex.Failures.Select(f => $"- {f}{Where(f)}")));
            return ExitConfiguration;
        }
        catch (InvalidOperationException ex) when (ex.Message.StartsWith("Failed to convert configuration value", StringComparison.Ordinal))
        {
            // The binder names the key, the type and the value (capped: a value is the user's own text, and never the
            // token, which is a string and always converts).
            var hint = ex.Message.Contains("TimeSpan", StringComparison.Ordinal) ? " Durations are written hh:mm:ss, e.g. \"00:00:10\"." : "";
            await Console.Error.WriteLineAsync($"sitelink-agent: invalid configuration: {Cap(ex.Message)}{hint}");
            return ExitConfiguration;
        }
        catch (Exception ex)
        {
            await Console.Error.WriteLineAsync($"sitelink-agent failed unexpectedly while starting: {ex}");
            return ExitUnexpected;
        }

        using (host)
        {
            try
            {
                return diagnose ? await DiagnoseAsync(host, json) : await RunHostAsync(host);
            }
            catch (Exception ex)
            {
                await Console.Error.WriteLineAsync($"sitelink-agent failed unexpectedly: {ex}");
                return ExitUnexpected;
            }
        }
    }

    /// <summary>
    /// Builds the host and binds and validates the options now, before the host starts: a mistake is one message
    /// (the caller prints it), instead of the host's "Hosting failed to start" with a stack trace.
    /// </summary>
    private static IHost Build(string[] args, Action<HostApplicationBuilder>? configure)
    {
        var builder = AgentHost.CreateBuilder(args);
        configure?.Invoke(builder);
        var host = builder.Build();
        try
        {
            _ = host.Services.GetRequiredService<IOptions<TunnelSessionOptions>>().Value;
            return host;
        }
        catch
        {
            host.Dispose();
            throw;
        }
    }

    private static async Task<int> RunHostAsync(IHost host)
    {
        var session = host.Services.GetRequiredService<ITunnelSession>();
        var lifetime = host.Services.GetRequiredService<IHostApplicationLifetime>();
        var logger = host.Services.GetRequiredService<ILoggerFactory>().CreateLogger("SiteLink.Agent");
        TunnelException? fault = null;
        var refused = 0;
        session.StateChanged += (_, e) =>
        {
            if (e.State == TunnelSessionState.Faulted)
            {
                fault = e.Exception as TunnelException;
            }
        };
        session.BindCompleted += (_, e) =>
        {
            // A name the relay will never accept (not in the token's Allow list, or invalid) is a configuration
            // mismatch between this agent and the relay: stop, so it is seen, rather than run without the endpoint.
            if (e.Error is TunnelBindException { Code: BindErrorCode.Denied or BindErrorCode.Invalid } refusal
                && Interlocked.Exchange(ref refused, 1) == 0)
            {
                EndpointRefused(logger, e.EndpointName, refusal.Message);
                lifetime.StopApplication();
            }
        };

        await host.RunAsync();
        if (Volatile.Read(ref refused) == 1)
        {
            return ExitRefused;
        }

        return ExitCodeFor((Volatile.Read(ref fault) ?? session.Fault)?.TunnelError, diagnosing: false);
    }

    /// <summary>
    /// <c>sitelink-agent diagnose</c>: checks the way to each relay step by step and prints the report (the human text,
    /// or with <c>--json</c> the JSON alone on standard output); the exit code says what failed, as when running.
    /// </summary>
    private static async Task<int> DiagnoseAsync(IHost host, bool json)
    {
        var options = host.Services.GetRequiredService<IOptions<TunnelSessionOptions>>().Value;
        using var cancel = new CancellationTokenSource();
        ConsoleCancelEventHandler onCancel = (_, e) =>
        {
            e.Cancel = true;
            cancel.Cancel();
        };
        Console.CancelKeyPress += onCancel;
        TunnelDiagnosticReport report;
        try
        {
            report = await TunnelDiagnostics.RunAsync(options, cancel.Token);
        }
        catch (OperationCanceledException) when (cancel.IsCancellationRequested)
        {
            await Console.Error.WriteLineAsync("sitelink-agent diagnose: cancelled.");
            return ExitUnexpected;
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }

        if (json)
        {
            Console.WriteLine(report.ToJson());
        }
        else
        {
            Console.WriteLine(report.ToString());
            Console.WriteLine("For help, send this output (or that of 'sitelink-agent diagnose --json') to the vendor's support: it contains no secrets (no authtoken, no proxy password).");
        }

        return ExitCodeFor(report.FailedStep?.Error, diagnosing: true);
    }

    /// <summary>The documented exit code for a failure of this kind (docs/operations.md); 0 for none.</summary>
    private static int ExitCodeFor(TunnelError? error, bool diagnosing) => error switch
    {
        null => ExitStopped,
        TunnelError.AuthenticationFailed => ExitAuthentication,
        TunnelError.CertificateRejected => ExitTrust,
        TunnelError.VersionNotSupported => ExitVersion,
        TunnelError.PermissionDenied => ExitRefused,
        TunnelError.ProxyFailed or TunnelError.ProxyAuthenticationFailed => ExitProxy,
        TunnelError.ConnectionFailed when diagnosing => ExitUnreachable,
        _ => ExitUnexpected,
    };

    private static string Cap(string text) => text.Length <= 400 ? text : text[..400] + "…";

    /// <summary>Which switch or variable sets the option a validation failure names.</summary>
    private static string Where(string failure) => failure switch
    {
        _ when failure.StartsWith("RelayUrl", StringComparison.Ordinal) => " (--relay; http:// needs --insecure)",
        _ when failure.StartsWith("AuthToken", StringComparison.Ordinal) => " (SITELINK_AUTHTOKEN, or --token)",
        _ when failure.StartsWith("PinnedCertificateSha256 and", StringComparison.Ordinal) => " (--pin and --ca-file)",
        _ when failure.StartsWith("PinnedCertificateSha256", StringComparison.Ordinal) => " (--pin)",
        _ when failure.StartsWith("TrustedCertificateAuthorities", StringComparison.Ordinal) => " (--ca-file)",
        _ when failure.StartsWith("Proxy.", StringComparison.Ordinal) => " (--proxy, or SiteLink__Proxy__UserName / SiteLink__Proxy__Password)",
        _ when failure.StartsWith("Endpoints", StringComparison.Ordinal) => " (--endpoint NAME=HOST:PORT, or SiteLink:Endpoints in the --config file)",
        _ => "",
    };

    [LoggerMessage(1, LogLevel.Critical, "Stopping: the relay refused endpoint '{EndpointName}' and will keep refusing it: {Reason} What to do: allow the name in the token's Allow list on the relay, or fix the name here.")]
    private static partial void EndpointRefused(ILogger logger, string endpointName, string reason);
}
