using System.Net.Security;
using System.Reflection;
using System.Runtime.InteropServices;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Core.Features;

namespace SiteLink.Relay.Hosting;

/// <summary>
/// Lets OpenSSL free an idle agent connection's TLS record buffers (<c>SSL_MODE_RELEASE_BUFFERS</c>, as nginx sets on
/// every connection). On Linux, SslStream is OpenSSL underneath and OpenSSL keeps a read and a write buffer of a full
/// record (~17 KiB each) allocated for the life of each connection: 34 KiB of native memory per idle agent session,
/// a third of the relay's memory per session (measured with heaptrack: 34.4 MB at 1,000 sessions from one libssl
/// allocation site). With the mode set, a buffer is freed once a record has been read or written completely and
/// allocated again for the next one: one malloc and free per record, against the record's encryption.
/// </summary>
/// <remarks>
/// .NET does not expose the mode, nor the <c>SSL*</c> of an <see cref="SslStream"/>: this reads the stream's private
/// <c>_securityContext</c> (on Linux a <c>SafeSslHandle</c> whose handle is the <c>SSL*</c>) and calls <c>SSL_ctrl</c>
/// of the libssl .NET itself loaded, after checking both report the same OpenSSL 3 version. When anything differs (another
/// platform, another .NET, another OpenSSL), it does nothing: connections keep their buffers as before.
/// </remarks>
internal static partial class TlsBufferRelease
{
    private const int SslCtrlMode = 33; // SSL_CTRL_MODE
    private const long SslModeReleaseBuffers = 0x10; // SSL_MODE_RELEASE_BUFFERS

    private static readonly Lazy<Setter?> Instance = new(Create);

    /// <summary>Whether connections' buffers are released (the platform, .NET and OpenSSL are those this was made for).</summary>
    public static bool IsAvailable => Instance.Value is not null;

    /// <summary>
    /// Kestrel connection middleware, after <c>UseHttps</c>: sets the mode on the connection's SSL before its HTTP/2
    /// processing starts (nothing reads or writes the stream yet, so the change races with nothing).
    /// </summary>
    public static Func<ConnectionDelegate, ConnectionDelegate> Middleware => next => context =>
    {
        if (context.Features.Get<ISslStreamFeature>()?.SslStream is { } stream)
        {
            TryApply(stream);
        }

        return next(context);
    };

    /// <summary>Sets <c>SSL_MODE_RELEASE_BUFFERS</c> on an authenticated stream; false when it cannot.</summary>
    public static bool TryApply(SslStream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        return Instance.Value?.Apply(stream) ?? false;
    }

    private static Setter? Create()
    {
        if (!OperatingSystem.IsLinux())
        {
            return null;
        }

        var field = typeof(SslStream).GetField("_securityContext", BindingFlags.Instance | BindingFlags.NonPublic);
        if (field is null || !typeof(SafeHandle).IsAssignableFrom(field.FieldType))
        {
            return null;
        }

        try
        {
            // The version of the libssl .NET loaded, and that of the one "libssl.so.3" names here: the same library only.
            var loaded = NativeMethods.CryptoNative_OpenSslVersionNumber();
            if (loaded < 0x3000_0000L || loaded >= 0x4000_0000L
                || !NativeLibrary.TryLoad("libssl.so.3", out var libssl)
                || !NativeLibrary.TryGetExport(libssl, "SSL_ctrl", out var sslCtrl)
                || !NativeLibrary.TryGetExport(libssl, "OpenSSL_version_num", out var versionNum))
            {
                return null;
            }

            unsafe
            {
                var version = ((delegate* unmanaged<nuint>)versionNum)();
                if ((long)version != loaded)
                {
                    return null;
                }
            }

            return new Setter(field, sslCtrl);
        }
        catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException or BadImageFormatException)
        {
            return null;
        }
    }

    private sealed class Setter(FieldInfo field, nint sslCtrl)
    {
        public unsafe bool Apply(SslStream stream)
        {
            // Only the Linux handle type is the SSL* itself.
            if (field.GetValue(stream) is not SafeHandle { IsInvalid: false, IsClosed: false } handle
                || handle.GetType().FullName != "Microsoft.Win32.SafeHandles.SafeSslHandle")
            {
                return false;
            }

            var added = false;
            try
            {
                handle.DangerousAddRef(ref added);
                var mode = ((delegate* unmanaged<nint, int, nint, nint, nint>)sslCtrl)(handle.DangerousGetHandle(), SslCtrlMode, (nint)SslModeReleaseBuffers, 0);
                return (mode & (nint)SslModeReleaseBuffers) != 0;
            }
            catch (ObjectDisposedException)
            {
                return false;
            }
            finally
            {
                if (added)
                {
                    handle.DangerousRelease();
                }
            }
        }
    }

    private static partial class NativeMethods
    {
        [LibraryImport("libSystem.Security.Cryptography.Native.OpenSsl")]
        internal static partial long CryptoNative_OpenSslVersionNumber();
    }
}
