using System.Net;
using System.Security.Cryptography.X509Certificates;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.Diagnostics;
using SiteLink.Relay.Security;

namespace SiteLink.Relay.Hosting;

/// <summary>
/// Says at start what the agent port serves and anything unsafe the configuration allowed: the certificate, plain
/// HTTP/2 or the development certificate off loopback, weak tokens accepted on loopback.
/// </summary>
internal sealed class RelayStartupReport : IHostedService
{
    private readonly RelayOptions _options;
    private readonly X509Certificate2? _certificate;
    private readonly IReadOnlyList<(string Name, string Why)> _weakTokens;
    private readonly ILogger _logger;

    public RelayStartupReport(RelayOptions options, RelayStartupFacts facts, ILogger<RelayStartupReport> logger)
    {
        _options = options;
        _certificate = facts.Certificate;
        _weakTokens = facts.WeakTokens;
        _logger = logger;
    }

    public Task StartAsync(CancellationToken cancellationToken)
    {
        var listen = RelayOptionsValidator.ParseEndPoint(_options.AgentListen);
        var onLoopback = IPAddress.IsLoopback(listen.Address);
        if (_certificate is null)
        {
            RelayLog.CertificateServed(_logger, "none: TLS is disabled (Relay:Tls:Disabled), agents connect with plain HTTP/2");
            if (!onLoopback)
            {
                RelayLog.UnsafeOnNetwork(_logger, "plain HTTP/2 without TLS", _options.AgentListen, "Relay:Tls:AllowPlaintextOnNetwork",
                    "Authtokens and every tunnelled byte cross the network unencrypted.");
            }
        }
        else
        {
            RelayLog.CertificateServed(_logger, RelayCertificate.Describe(_certificate, _options.Tls));
            if (!onLoopback && _options.Tls.CertificatePath is null)
            {
                RelayLog.UnsafeOnNetwork(_logger, "a self-signed development certificate", _options.AgentListen, "Relay:Tls:AllowDevelopmentCertificateOnNetwork",
                    "Only agents that pin its SHA-256 can trust it; configure Relay:Tls:CertificatePath for production.");
            }
        }

        foreach (var (name, why) in _weakTokens)
        {
            RelayLog.WeakToken(_logger, name, why);
        }

        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}

/// <summary>What the relay found while starting that its start-up report tells.</summary>
internal sealed record RelayStartupFacts(X509Certificate2? Certificate, IReadOnlyList<(string Name, string Why)> WeakTokens);
