using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;

namespace SiteLink.FunctionalTests.Infrastructure;

/// <summary>
/// A TLS server on 127.0.0.1:0 standing in for a customer's TLS service behind the agent (TLS ends here, not at the
/// relay). Over TLS: "PING" is answered "PONG {name}" and the connection closed; "GET " gets an HTTP/1.1 200 whose body
/// is "tls-upstream:{name}"; anything else is echoed until the client's end of stream. Records the raw bytes it read
/// from the wire (ciphertext), so a test can compare them with what the client sent.
/// </summary>
internal sealed class TlsUpstream : IAsyncDisposable
{
    private readonly TestUpstream _server;
    private readonly X509Certificate2 _certificate;
    private readonly string _name;

    private readonly string? _requiredClientThumbprint;

    /// <param name="name">Said in its answers.</param>
    /// <param name="dnsName">The name its certificate is for.</param>
    /// <param name="requiredClientThumbprint">When set, mutual TLS: only a client presenting this certificate is served.</param>
    public TlsUpstream(string name, string dnsName, string? requiredClientThumbprint = null)
    {
        _name = name;
        _requiredClientThumbprint = requiredClientThumbprint;
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={dnsName}", key, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        names.AddDnsName(dnsName);
        request.CertificateExtensions.Add(names.Build());
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(certificateAuthority: true, hasPathLengthConstraint: false, pathLengthConstraint: 0, critical: true));
        using var created = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(30));
        _certificate = X509CertificateLoader.LoadPkcs12(created.Export(X509ContentType.Pkcs12), null);
        _server = TestUpstream.Custom(ServeAsync);
    }

    public Uri Uri => _server.Uri;

    /// <summary>The certificate's SHA-256, for clients to pin.</summary>
    public string Thumbprint => _certificate.GetCertHashString(HashAlgorithmName.SHA256);

    /// <summary>The certificate without its key, as a client trusts it.</summary>
    public X509Certificate2 PublicCertificate => X509CertificateLoader.LoadCertificate(_certificate.RawData);

    /// <summary>The certificate with its key, for a TLS server (the agent terminating TLS) to present.</summary>
    public X509Certificate2 ServerCertificate => _certificate;

    /// <summary>The certificate as PEM, for curl's --cacert.</summary>
    public string Pem => _certificate.ExportCertificatePem();

    /// <summary>Everything read from the wire by the last connection, before TLS decrypted it.</summary>
    public byte[] LastRawBytesRead { get; private set; } = [];

    private async Task ServeAsync(Socket socket, CancellationToken cancellationToken)
    {
        var raw = new RecordingStream(new NetworkStream(socket, ownsSocket: false));
        try
        {
            await using var tls = new SslStream(raw);
            var required = _requiredClientThumbprint;
            await tls.AuthenticateAsServerAsync(new SslServerAuthenticationOptions
            {
                ServerCertificate = _certificate,
                ClientCertificateRequired = required is not null,
                RemoteCertificateValidationCallback = (_, client, _, _) => required is null || client?.GetCertHashString(HashAlgorithmName.SHA256) == required,
            }, cancellationToken).WaitAsync(TimeSpan.FromSeconds(10), cancellationToken);
            var buffer = new byte[64 * 1024];
            var first = await tls.ReadAsync(buffer, cancellationToken);
            var start = Encoding.ASCII.GetString(buffer, 0, Math.Min(first, 4));
            if (start == "PING")
            {
                await tls.WriteAsync(Encoding.ASCII.GetBytes($"PONG {_name}\n"), cancellationToken);
                await tls.ShutdownAsync();
                return;
            }

            if (start == "GET ")
            {
                var body = $"tls-upstream:{_name}";
                await tls.WriteAsync(Encoding.ASCII.GetBytes($"HTTP/1.1 200 OK\r\nContent-Length: {body.Length}\r\nConnection: close\r\n\r\n{body}"), cancellationToken);
                await tls.ShutdownAsync();
                return;
            }

            for (var read = first; read > 0; read = await tls.ReadAsync(buffer, cancellationToken))
            {
                await tls.WriteAsync(buffer.AsMemory(0, read), cancellationToken);
            }

            await tls.ShutdownAsync();
            socket.Shutdown(SocketShutdown.Send);
        }
        catch (Exception ex) when (ex is IOException or System.Security.Authentication.AuthenticationException or TimeoutException or SocketException or ObjectDisposedException)
        {
            // The client went away or was not TLS; nothing to serve.
        }
        finally
        {
            LastRawBytesRead = raw.BytesRead.ToArray();
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _server.DisposeAsync();
        _certificate.Dispose();
    }
}

/// <summary>A stream that keeps a copy of every byte read from and written to the stream it wraps.</summary>
internal sealed class RecordingStream(Stream inner) : Stream
{
    public MemoryStream BytesRead { get; } = new();

    public MemoryStream Written { get; } = new();

    public override bool CanRead => true;

    public override bool CanWrite => true;

    public override bool CanSeek => false;

    public override long Length => throw new NotSupportedException();

    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        var read = await inner.ReadAsync(buffer, cancellationToken);
        lock (BytesRead)
        {
            BytesRead.Write(buffer.Span[..read]);
        }

        return read;
    }

    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        lock (Written)
        {
            Written.Write(buffer.Span);
        }

        await inner.WriteAsync(buffer, cancellationToken);
    }

    public override int Read(byte[] buffer, int offset, int count) => ReadAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) => ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override void Write(byte[] buffer, int offset, int count) => WriteAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) => WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override void Flush() => inner.Flush();

    public override Task FlushAsync(CancellationToken cancellationToken) => inner.FlushAsync(cancellationToken);

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            inner.Dispose();
        }

        base.Dispose(disposing);
    }
}
