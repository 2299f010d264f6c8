using System.Text;

namespace RaySharp.CoreWorker.Execution;

/// <summary>
/// Console.Out and Console.Error of a worker process: what a task writes goes to that task's buffer (per async flow,
/// so it follows the task across awaits) and back to its driver with the reply; anything else goes to the worker's log.
/// </summary>
internal sealed class TaskOutputCapture(TextWriter log) : TextWriter
{
    private static readonly AsyncLocal<(StringBuilder Out, StringBuilder Error)?> s_current = new();
    private readonly bool _isError;

    private TaskOutputCapture(TextWriter log, bool isError) : this(log) => _isError = isError;

    public override Encoding Encoding => log.Encoding;

    /// <summary>Routes Console.Out and Console.Error through capture; call once per worker process.</summary>
    public static void Install()
    {
        Console.SetOut(TextWriter.Synchronized(new TaskOutputCapture(Console.Out, isError: false)));
        Console.SetError(TextWriter.Synchronized(new TaskOutputCapture(Console.Error, isError: true)));
    }

    /// <summary>Starts capturing for the current flow (a task); the returned buffers collect its output.</summary>
    public static (StringBuilder Out, StringBuilder Error) Begin()
    {
        var buffers = (new StringBuilder(), new StringBuilder());
        s_current.Value = buffers;
        return buffers;
    }

    public static void End() => s_current.Value = null;

    private StringBuilder? Target => s_current.Value is { } b ? (_isError ? b.Error : b.Out) : null;

    public override void Write(char value)
    {
        if (Target is { } t) lock (t) t.Append(value);
        else log.Write(value);
    }

    public override void Write(string? value)
    {
        if (Target is { } t) lock (t) t.Append(value);
        else log.Write(value);
    }

    public override void Write(char[] buffer, int index, int count)
    {
        if (Target is { } t) lock (t) t.Append(buffer, index, count);
        else log.Write(buffer, index, count);
    }

    public override void Flush() => log.Flush();
}
