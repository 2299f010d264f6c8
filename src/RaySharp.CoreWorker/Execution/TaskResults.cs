using System.Reflection;
using Google.Protobuf;
using RaySharp.CoreWorker.Serialization;
using RaySharp.Rpc.Protocol;

namespace RaySharp.CoreWorker.Execution;

/// <summary>What tasks and actor calls share once user code returned: awaiting it, serializing it, reporting a failure.</summary>
internal static class TaskResults
{
    private static readonly ByteString s_null = ByteString.CopyFrom(ValueSerializer.Serialize<object?>(null));

    /// <summary>The serialized result of a call that returned <paramref name="result"/>; async results are awaited first.</summary>
    public static async ValueTask<ByteString> SerializeAsync(object? result, Type returnType)
    {
        switch (result)
        {
            case Task task:
                await task.ConfigureAwait(false);
                if (!returnType.IsGenericType) return s_null;
                result = task.GetType().GetProperty("Result")!.GetValue(task);
                returnType = returnType.GetGenericArguments()[0];
                break;
            case ValueTask valueTask:
                await valueTask.ConfigureAwait(false);
                return s_null;
            default:
                if (returnType.IsGenericType && returnType.GetGenericTypeDefinition() == typeof(ValueTask<>))
                {
                    var asTask = (Task)returnType.GetMethod("AsTask")!.Invoke(result, null)!;
                    await asTask.ConfigureAwait(false);
                    returnType = returnType.GetGenericArguments()[0];
                    result = asTask.GetType().GetProperty("Result")!.GetValue(asTask);
                }
                break;
        }
        return returnType == typeof(void) ? s_null : ByteString.CopyFrom(ValueSerializer.Serialize(returnType, result));
    }

    /// <summary>True when calls to a method return something to await (Ray's async methods).</summary>
    public static bool IsAsync(Type returnType) =>
        typeof(Task).IsAssignableFrom(returnType) || returnType == typeof(ValueTask)
        || (returnType.IsGenericType && returnType.GetGenericTypeDefinition() == typeof(ValueTask<>));

    public static PushTaskReply Failure(Exception e, CoreWorkerOptions options)
    {
        var error = e is TargetInvocationException { InnerException: { } inner } ? inner : e;
        return new PushTaskReply
        {
            Error = new TaskError
            {
                ExceptionType = error.GetType().FullName ?? error.GetType().Name,
                Message = error.Message,
                StackTrace = error.StackTrace ?? "",
                NodeIpAddress = options.NodeIpAddress,
                WorkerId = options.WorkerId,
                Pid = Environment.ProcessId,
            },
        };
    }
}
